"""One module per screen; screens lay out what ``tui.model`` computes and call the
app's actions, they hold no domain logic."""
