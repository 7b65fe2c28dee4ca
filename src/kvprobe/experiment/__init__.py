"""`kvprobe experiment`: named conditions, run interleaved, to test why a container loses KV cache."""
