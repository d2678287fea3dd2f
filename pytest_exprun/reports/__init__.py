"""Reports: stored runs and decisions rendered as Markdown, JSON, plots and the summary.

Nothing here decides; a report renders what the store holds."""
