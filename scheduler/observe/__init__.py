"""What every wing may use to be seen: Prometheus metrics (:mod:`.metrics`), structured logs
(:mod:`.logs`) and systemd's sd_notify protocol (:mod:`.sdnotify`). Imports no other wing.
"""
