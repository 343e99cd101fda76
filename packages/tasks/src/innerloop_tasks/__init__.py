"""innerloop package."""
