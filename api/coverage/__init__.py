"""Coverage maps for coordinators: where and when nobody arrives in time, whom to recruit."""
