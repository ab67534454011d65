"""Context layers: the registry, JakWifi, ISPU, hotspots and surfaces."""
