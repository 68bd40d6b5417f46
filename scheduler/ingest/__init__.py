"""Everything that brings usage in: file formats and validation (:mod:`.files`), the one write
path into the store (:mod:`.write`) and the HTTP push endpoint (:mod:`.push`).
"""
