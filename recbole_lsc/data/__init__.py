"""Reading RecBole atomic files: safe dataset loading and item text."""
