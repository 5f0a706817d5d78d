"""The kernel model: ``offline_pages()`` and the code around it, in numpy."""
