"""The concrete edges of the ingest sources: the HTTP fetcher of the feed poller and the foreign Kafka reader."""
