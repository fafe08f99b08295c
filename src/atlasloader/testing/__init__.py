"""Helpers for testing code that uses atlasloader: a loopback S3 server with latency and faults."""
