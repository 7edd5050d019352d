"""The wallet service's schema revisions, oldest first (`w0001`, …)."""
