"""The content-addressed cache and what goes in it: the ONNX export, precision conversion and
reference outputs.
"""
