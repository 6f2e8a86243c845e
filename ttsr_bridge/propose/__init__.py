"""ttsr_bridge.propose"""
