/*!
 * \file run_aoti.cc
 * \brief A LibTorch program without Python that runs an AOTInductor package (.pt2 from
 *        torch._inductor.aoti_compile_and_package) with torch::inductor::AOTIModelPackageLoader.
 *
 * Place in the data flow: tests/test_deploy_cpp.py packages a parent model holding a
 * byoc_torch compiled part (the op byoc_torch::execute and its TorchScript object travel in
 * the package), saves its inputs with torch.save (a list of tensors), runs this program with
 * the runtime libraries preloaded and compares the outputs it wrote with eager PyTorch.
 *
 *   run_aoti PACKAGE.pt2 INPUTS.pt OUTPUTS.pt
 *
 * On an error it prints the error and exits with status 1 (never aborts).
 */
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>

#include <iostream>
#include <vector>

#include "program_io.h"

int main(int argc, char** argv) {
  if (argc != 4) {
    std::cerr << "usage: run_aoti PACKAGE.pt2 INPUTS.pt OUTPUTS.pt\n";
    return 2;
  }
  try {
    torch::inductor::AOTIModelPackageLoader loader(argv[1]);
    std::cout << "loaded " << argv[1] << "\n";
    std::vector<at::Tensor> inputs = program_io::ReadInputs(argv[2]);
    std::vector<at::Tensor> outputs;
    {
      torch::NoGradGuard no_grad;
      outputs = loader.run(inputs);
    }
    program_io::WriteOutputs(outputs, argv[3]);
  } catch (const std::exception& err) {
    std::cerr << "error: " << err.what() << "\n";
    return 1;
  }
  return 0;
}
