"""ttsr_bridge.pysr"""
