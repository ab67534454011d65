"""Pure geospatial core: boundaries, snapping, H3, analysis maths (no database)."""
