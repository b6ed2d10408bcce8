"""Attribution state: the temporal key/team/organization history and its persistence."""
