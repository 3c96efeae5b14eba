//! Runtimes that execute ONNX files: ONNX Runtime and tract behind one trait.
