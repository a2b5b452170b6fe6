global using Microsoft.ML.Orpo.Kernels;
global using Microsoft.ML.Orpo.Native;
global using Microsoft.ML.Orpo.Ops;
