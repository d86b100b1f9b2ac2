"""noctis.worker"""
