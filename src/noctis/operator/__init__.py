"""noctis.operator"""
