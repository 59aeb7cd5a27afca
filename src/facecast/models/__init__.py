"""Model weights: the registry of what each effect needs, and the verified downloader."""
