"""One function per pipeline step; each Lambda handler parses its event and calls one of them.

Every step is idempotent: names are derived from the inputs, "already exists" means "done",
and an event is announced by the delivery that did the work (or, rarely, again by a retry
that found its sender dead: `notifications`).
"""
