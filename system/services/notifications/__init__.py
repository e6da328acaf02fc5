"""notifications: one email-channel notification per user or order event, read per user."""
