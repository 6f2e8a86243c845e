"""ttsr_bridge.model"""
