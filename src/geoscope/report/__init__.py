"""Pictures and files made from Predictions: maps, exports, HTML."""
