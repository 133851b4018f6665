"""segr1 package."""
