"""Pure geography: sphere math, geocells, places, metrics. numpy / shapely only, no torch."""
