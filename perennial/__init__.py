"""perennial"""
