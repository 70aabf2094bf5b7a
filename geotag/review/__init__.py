"""`geotag review`: look at predictions and decide, in a local web app, before anything is written."""
