"""jmap layer."""
