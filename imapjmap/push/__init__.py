"""Push: the StateChange hub, upstream watchers, and their wiring."""
