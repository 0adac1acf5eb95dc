/*!
 * \file run_torchscript.cc
 * \brief A LibTorch program without Python: torch::jit::load a TorchScript archive, run it on
 *        the inputs in a file, write the outputs to a file (what Triton's PyTorch backend does
 *        with a model.pt).
 *
 * Place in the data flow: tests/test_deploy_cpp.py saves a model holding byoc_torch compiled
 * parts with torch.jit.save and its inputs with torch.save (a list of tensors), runs this
 * program with the runtime libraries preloaded (LD_PRELOAD=$(byoc-torch lib-path
 * --ld-preload)) and compares the outputs it wrote with eager PyTorch.
 *
 *   run_torchscript MODEL.pt INPUTS.pt OUTPUTS.pt
 *
 * Prints what it did and whether a libpython is mapped; on an error it prints the error and
 * exits with status 1 (never aborts).
 */
#include <torch/script.h>

#include <iostream>
#include <vector>

#include "program_io.h"

int main(int argc, char** argv) {
  if (argc != 4) {
    std::cerr << "usage: run_torchscript MODEL.pt INPUTS.pt OUTPUTS.pt\n";
    return 2;
  }
  try {
    torch::jit::Module model = torch::jit::load(argv[1]);
    model.eval();
    std::cout << "loaded " << argv[1] << "\n";
    std::vector<c10::IValue> inputs;
    for (const at::Tensor& x : program_io::ReadInputs(argv[2])) {
      std::cout << "input: " << program_io::Describe(x) << "\n";
      inputs.emplace_back(x);
    }
    c10::IValue result;
    {
      torch::NoGradGuard no_grad;
      result = model.forward(inputs);
    }
    std::vector<at::Tensor> outputs;
    if (result.isTensor()) {
      outputs.push_back(result.toTensor());
    } else {
      for (const c10::IValue& x : result.toTupleRef().elements()) outputs.push_back(x.toTensor());
    }
    program_io::WriteOutputs(outputs, argv[3]);
  } catch (const std::exception& err) {
    std::cerr << "error: " << err.what() << "\n";
    return 1;
  }
  return 0;
}
