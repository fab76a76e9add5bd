"""Monitoring: the image gate, drift tests and alarms (design.md section 10)."""
