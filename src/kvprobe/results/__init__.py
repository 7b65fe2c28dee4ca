"""Results: the typed document (`schema`), its versioned loader, the atomic store and journal,
the document builder and the memory attribution."""
