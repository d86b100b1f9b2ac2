"""noctis.scp"""
