"""The long-running service: :mod:`.tick` (one minute's steps, leader election, refits),
:mod:`.journal` (the action outbox: journal, send, confirm, recover), :mod:`.rails` (safety
limits on what a tick may change) and :mod:`.providers` (the provider instances in use).
"""
