"""Tables and plots made from finished runs."""
