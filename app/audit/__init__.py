"""The audit log: who did what to which model, when, and with what effect."""
