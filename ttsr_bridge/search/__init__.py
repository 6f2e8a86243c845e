"""ttsr_bridge.search"""
