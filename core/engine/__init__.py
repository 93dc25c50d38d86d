"""Dialogue engine: the Backend protocol both profiles implement, typed events, and (later) the scheduler."""
