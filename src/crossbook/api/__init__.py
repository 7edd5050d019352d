"""The gateways: REST v1, WebSocket streams, auth and error envelopes, over the engine."""
