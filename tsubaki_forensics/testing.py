"""pytest plugin for authors of tsubaki-forensics analysis plugins (filled in by the analyze work)."""
