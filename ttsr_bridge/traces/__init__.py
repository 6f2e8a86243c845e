"""ttsr_bridge.traces"""
