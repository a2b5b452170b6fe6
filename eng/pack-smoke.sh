#!/usr/bin/env bash
# Pack smoke test: packs Microsoft.ML.Orpo into a temporary local feed, then creates a throwaway console app OUTSIDE
# the repository (so none of the repo's Directory.Build.* files apply) that references only the package (plus the
# CPU libtorch runtime), restores it from that feed + nuget.org, builds it, and runs it: it loads the bundled
# preference set with LoadPreferenceJsonl, fine-tunes models/stories260K for one epoch and generates one story.
# The run only succeeds if the package's buildTransitive/Microsoft.ML.Orpo.targets patched the TorchSharp native
# library in the app's output (on Debian 12 and other systems whose libstdc++ lacks GLIBCXX_3.4.32).
# A stale copy cannot be used: the package's version folder is removed from the NuGet global packages cache before
# the restore and again on exit. Prints the elapsed time; exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1
start=$(date +%s)
work="$(mktemp -d)"
packages="$(dotnet nuget locals global-packages --list | sed -n 's/^global-packages: *//p')"
packages="${packages%/}"
version="$(sed -n 's:.*<Version>\(.*\)</Version>.*:\1:p' src/Microsoft.ML.Orpo/Microsoft.ML.Orpo.csproj | head -n 1)"
cached="$packages/microsoft.ml.orpo/$version"
cleanup() { rm -rf "$work" "$cached"; }
trap cleanup EXIT

echo "pack-smoke: packing Microsoft.ML.Orpo $version"
dotnet pack src/Microsoft.ML.Orpo -c Release -o "$work/feed" --nologo -v q
nupkg="$work/feed/Microsoft.ML.Orpo.$version.nupkg"
[ -f "$nupkg" ] || { echo "pack-smoke: $nupkg was not produced" >&2; exit 1; }
listing="$(unzip -l "$nupkg")"
for entry in buildTransitive/Microsoft.ML.Orpo.targets build/Microsoft.ML.Orpo.targets lib/net10.0/Microsoft.ML.Orpo.dll lib/net10.0/Microsoft.ML.Orpo.xml; do
  grep -q " $entry\$" <<<"$listing" || { echo "pack-smoke: the package lacks $entry" >&2; exit 1; }
done
if grep -q "lib.*libtorch\|runtimes/" <<<"$listing"; then echo "pack-smoke: the package must not carry native runtimes" >&2; exit 1; fi

torch_runtime="$(sed -n 's:.*Include="libtorch-cpu-linux-x64" Version="\[\(.*\)\]".*:\1:p' Directory.Packages.props)"
mkdir -p "$work/app"
cat > "$work/app/NuGet.config" <<XML
<?xml version="1.0" encoding="utf-8"?>
<configuration>
  <packageSources>
    <clear />
    <add key="local-feed" value="$work/feed" />
    <add key="nuget.org" value="https://api.nuget.org/v3/index.json" protocolVersion="3" />
  </packageSources>
</configuration>
XML
cat > "$work/app/SmokeApp.csproj" <<XML
<Project Sdk="Microsoft.NET.Sdk">
  <PropertyGroup>
    <OutputType>Exe</OutputType>
    <TargetFramework>net10.0</TargetFramework>
    <Nullable>enable</Nullable>
    <ImplicitUsings>enable</ImplicitUsings>
  </PropertyGroup>
  <ItemGroup>
    <PackageReference Include="Microsoft.ML.Orpo" Version="$version" />
    <PackageReference Include="libtorch-cpu-linux-x64" Version="$torch_runtime" />
  </ItemGroup>
</Project>
XML
cat > "$work/app/Program.cs" <<'CS'
using Microsoft.ML;
using Microsoft.ML.Orpo;

string root = args[0];
var ml = new MLContext(seed: 1);
var pairs = ml.Data.LoadPreferenceJsonl(Path.Combine(root, "data", "stories-preferences", "train.jsonl"));
using var model = ml.Transforms.OrpoFineTune(new OrpoOptions
{
    BaseModelPath = Path.Combine(root, "models", "stories260K", "hf"),
    Lambda = 0.25, LearningRate = 1e-3, Epochs = 1, BatchSize = 8,
}).Fit(pairs);
string text = model.Generate("Once upon a time, there was a little girl named", new GenerationOptions { MaxNewTokens = 16 });
Console.WriteLine($"pack-smoke: {model.TrainingHistory.Count} steps, generated: {text.ReplaceLineEndings(" ")}");
// The kernels' malloc'd tensors bind LibTorchSharp's THSTensor_new themselves: that binding must resolve in a package
// consumer too (without it the library silently falls back to libtorch's allocator).
var hostTensors = typeof(OrpoOptions).Assembly.GetType("Microsoft.ML.Orpo.Modeling.HostTensors", throwOnError: true)!;
bool bound = (bool)hostTensors.GetMethod("Serves")!.Invoke(null, new object[] { 1L << 20 })!;
Console.WriteLine($"pack-smoke: malloc'd kernel tensors bound: {bound}");
if (OperatingSystem.IsLinux() && !bound) return 1;
return string.IsNullOrWhiteSpace(text) ? 1 : 0;
CS

echo "pack-smoke: building a console app against the package (restore from $work/feed)"
rm -rf "$cached"
dotnet build "$work/app" -c Release --nologo -v q
[ -f "$cached/buildTransitive/Microsoft.ML.Orpo.targets" ] || { echo "pack-smoke: restore did not use the fresh package" >&2; exit 1; }
dotnet "$work/app/bin/Release/net10.0/SmokeApp.dll" "$root"
echo "pack-smoke: passed in $(( $(date +%s) - start )) s"
