"""Ingest sources: the pure logic of each way messages come in (RSS/Atom feeds, files and directories, a foreign
Kafka topic, Slack and Discord exports), each normalizing to the message record through :mod:`aet.pipeline.ingest`
and reaching the bus, the state store and the network only through :mod:`aet.pipeline.ports`."""
