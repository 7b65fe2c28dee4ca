"""Terminal output: the live view of trials and the summary table. Nothing here measures."""
