"""Command-line tools and reports: FLOPs, weight conversion, pictures."""
