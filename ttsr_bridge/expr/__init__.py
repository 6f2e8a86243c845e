"""ttsr_bridge.expr"""
