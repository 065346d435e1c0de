"""What a warm reports: the report model, JUnit XML, the GitHub step summary, progress display."""
