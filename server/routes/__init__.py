"""HTTP routes: each validates, calls one service, and returns JSON or a stream."""
