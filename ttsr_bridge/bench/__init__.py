"""ttsr_bridge.bench"""
