-- Data-parallel rendezvous: rank 0 of an attempt publishes where its c10d store listens
-- ("host:port"); the other ranks read it from their heartbeat's assignment.
ALTER TABLE attempts ADD COLUMN rendezvous text NOT NULL DEFAULT '';
