"""Private implementation helpers shared by every robustjax package."""
