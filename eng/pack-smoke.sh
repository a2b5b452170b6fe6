#!/usr/bin/env bash
# Pack smoke test: packs Microsoft.ML.Orpo into a temporary local feed, then builds two throwaway console apps OUTSIDE
# the repository (so none of the repo's Directory.Build.* files apply) that reference only the package, the CPU
# libtorch runtime and a Microsoft.ML of their own choosing:
#   mlnet6  Microsoft.ML 6.0.0, plus Microsoft.ML.TorchSharp 0.24.0 (ML.NET's own TorchSharp trainers), so that restore
#           must settle on one TorchSharp and one Microsoft.ML.Tokenizers beside ours
#   mlnet5  Microsoft.ML 5.0.1, the oldest release the package accepts
# Each restores with no warning about our package, generates with the base model (FromPretrained), fine-tunes
# models/stories260K for one epoch on the bundled preference set, saves a model zip, and then loads that zip in a
# fresh process and generates again: the texts must be identical. The runs only succeed if the package's
# buildTransitive/Microsoft.ML.Orpo.targets patched the TorchSharp native library in the app's output (on Debian 12
# and other systems whose libstdc++ lacks GLIBCXX_3.4.32).
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
nuspec="$(unzip -p "$nupkg" Microsoft.ML.Orpo.nuspec)"
grep -q 'id="Microsoft.ML" version="\[5.0.1, 7.0.0)"' <<<"$nuspec" \
  || { echo "pack-smoke: the package must accept Microsoft.ML [5.0.1, 7.0):" >&2; grep 'dependency' <<<"$nuspec" >&2; exit 1; }

torch_runtime="$(sed -n 's:.*Include="libtorch-cpu-linux-x64" Version="\[\(.*\)\]".*:\1:p' Directory.Packages.props)"
cat > "$work/NuGet.config" <<XML
<?xml version="1.0" encoding="utf-8"?>
<configuration>
  <packageSources>
    <clear />
    <add key="local-feed" value="$work/feed" />
    <add key="nuget.org" value="https://api.nuget.org/v3/index.json" protocolVersion="3" />
  </packageSources>
</configuration>
XML

# One program for both apps: "train ROOT ZIP" generates with the base model, fine-tunes, saves the zip and prints the
# fine-tuned text; "load ZIP" (a fresh process) loads the zip and prints the same prompt's text.
cat > "$work/Program.cs" <<'CS'
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Orpo;

const string Prompt = "Once upon a time, there was a little girl named";
var generation = new GenerationOptions { MaxNewTokens = 16 };
Console.WriteLine($"pack-smoke: Microsoft.ML {Version(typeof(MLContext))}, Microsoft.ML.Tokenizers {Version(typeof(Microsoft.ML.Tokenizers.Tokenizer))}, TorchSharp {Version(typeof(TorchSharp.torch))}");
#if WITH_ML_TORCHSHARP
Console.WriteLine($"pack-smoke: beside Microsoft.ML.TorchSharp {Version(typeof(Microsoft.ML.TorchSharp.TorchSharpCatalog))}");
#endif
if (args[0] == "load")
{
    var fresh = new MLContext(seed: 1).RegisterOrpo();
    using var loaded = (OrpoTransformer)fresh.Model.Load(args[1], out _);
    Console.WriteLine("text: " + loaded.Generate(Prompt, generation).ReplaceLineEndings(" "));
    return 0;
}
string root = args[1];
var ml = new MLContext(seed: 1);
using (var baseModel = OrpoTransformer.FromPretrained(ml, Path.Combine(root, "models", "stories260K", "hf")))
    Console.WriteLine("pack-smoke: base model: " + baseModel.Generate(Prompt, generation).ReplaceLineEndings(" "));
var pairs = ml.Data.LoadPreferenceJsonl(Path.Combine(root, "data", "stories-preferences", "train.jsonl"));
using var model = ml.Transforms.OrpoFineTune(new OrpoOptions
{
    BaseModelPath = Path.Combine(root, "models", "stories260K", "hf"),
    Lambda = 0.25, LearningRate = 1e-3, Epochs = 1, BatchSize = 8,
}).Fit(pairs);
ml.Model.Save(model, pairs.Schema, args[2]);
string text = model.Generate(Prompt, generation);
Console.WriteLine($"pack-smoke: {model.TrainingHistory.Count} steps");
Console.WriteLine("text: " + text.ReplaceLineEndings(" "));
// The kernels' malloc'd tensors bind LibTorchSharp's THSTensor_new themselves: that binding must resolve in a package
// consumer too (without it the library silently falls back to libtorch's allocator).
var hostTensors = typeof(OrpoOptions).Assembly.GetType("Microsoft.ML.Orpo.Native.HostTensors", throwOnError: true)!;
bool bound = (bool)hostTensors.GetMethod("Serves")!.Invoke(null, new object[] { 1L << 20 })!;
Console.WriteLine($"pack-smoke: malloc'd kernel tensors bound: {bound}");
if (OperatingSystem.IsLinux() && !bound) return 1;
return string.IsNullOrWhiteSpace(text) ? 1 : 0;

static string Version(Type type) =>
    (type.Assembly.GetCustomAttributes(typeof(System.Reflection.AssemblyInformationalVersionAttribute), false)
        .Cast<System.Reflection.AssemblyInformationalVersionAttribute>().SingleOrDefault()?.InformationalVersion ?? "?").Split('+')[0];
CS

# smoke_app NAME MLNET_VERSION [EXTRA_PACKAGE_REFERENCE_XML] [DEFINE]
smoke_app() {
  local name="$1" mlnet="$2" extra="${3:-}" define="${4:-}" app="$work/$1"
  mkdir -p "$app"
  cp "$work/NuGet.config" "$work/Program.cs" "$app/"
  cat > "$app/SmokeApp.csproj" <<XML
<Project Sdk="Microsoft.NET.Sdk">
  <PropertyGroup>
    <OutputType>Exe</OutputType>
    <TargetFramework>net10.0</TargetFramework>
    <Nullable>enable</Nullable>
    <ImplicitUsings>enable</ImplicitUsings>
    <DefineConstants>\$(DefineConstants);$define</DefineConstants>
  </PropertyGroup>
  <ItemGroup>
    <PackageReference Include="Microsoft.ML.Orpo" Version="$version" />
    <PackageReference Include="Microsoft.ML" Version="$mlnet" />
    <PackageReference Include="libtorch-cpu-linux-x64" Version="$torch_runtime" />
    $extra
  </ItemGroup>
</Project>
XML
  echo "pack-smoke[$name]: restoring and building against Microsoft.ML $mlnet (our package from $work/feed)"
  rm -rf "$cached"
  dotnet restore "$app" --nologo -v n > "$app/restore.log" 2>&1 || { cat "$app/restore.log" >&2; return 1; }
  [ -f "$cached/buildTransitive/Microsoft.ML.Orpo.targets" ] || { echo "pack-smoke[$name]: restore did not use the fresh package" >&2; return 1; }
  # Warnings that concern our package (a version conflict, a downgrade, an unmet range) fail the test; others'
  # (e.g. Microsoft.ML.TorchSharp's NU1603 on its own dependencies) are printed and left alone.
  local warnings
  warnings="$(grep -oE 'warning NU[0-9]+: .*' "$app/restore.log" | sort -u || true)"
  local others
  others="$(grep -v 'Microsoft.ML.Orpo' <<<"$warnings" || true)"
  [ -z "$others" ] || echo "pack-smoke[$name]: restore warnings not about our package: $(sed 's/ \[.*//' <<<"$others" | tr '\n' ';')"
  if grep -q 'Microsoft.ML.Orpo' <<<"$warnings"; then echo "pack-smoke[$name]: restore warns about our package:" >&2; grep 'Microsoft.ML.Orpo' <<<"$warnings" >&2; return 1; fi
  local torchsharps
  torchsharps="$(python3 -c 'import json,sys; libs=json.load(open(sys.argv[1]))["libraries"]; print(" ".join(sorted(k for k in libs if k.lower().startswith(("torchsharp/","microsoft.ml/","microsoft.ml.tokenizers/")))))' "$app/obj/project.assets.json")"
  echo "pack-smoke[$name]: resolved $torchsharps"
  [ "$(tr ' ' '\n' <<<"$torchsharps" | grep -c '^TorchSharp/')" = 1 ] || { echo "pack-smoke[$name]: not exactly one TorchSharp" >&2; return 1; }
  grep -q "Microsoft.ML/$mlnet" <<<"$torchsharps" || { echo "pack-smoke[$name]: Microsoft.ML $mlnet was not resolved" >&2; return 1; }
  dotnet build "$app" -c Release --no-restore --nologo -v q
  local dll="$app/bin/Release/net10.0/SmokeApp.dll" trained fresh
  trained="$(dotnet "$dll" train "$root" "$app/orpo.zip")" || { echo "$trained"; echo "pack-smoke[$name]: training run failed" >&2; return 1; }
  echo "$trained" | sed "s/^/pack-smoke[$name] train: /"
  fresh="$(dotnet "$dll" load "$app/orpo.zip")" || { echo "$fresh"; echo "pack-smoke[$name]: fresh-process load failed" >&2; return 1; }
  echo "$fresh" | sed "s/^/pack-smoke[$name] fresh load: /"
  [ "$(grep '^text: ' <<<"$trained")" = "$(grep '^text: ' <<<"$fresh")" ] \
    || { echo "pack-smoke[$name]: the zip loaded in a fresh process generates different text" >&2; return 1; }
  grep -q "Microsoft.ML $mlnet," <<<"$fresh" || { echo "pack-smoke[$name]: the app did not run on Microsoft.ML $mlnet" >&2; return 1; }
}

smoke_app mlnet6 6.0.0 '<PackageReference Include="Microsoft.ML.TorchSharp" Version="0.24.0" />' WITH_ML_TORCHSHARP
smoke_app mlnet5 5.0.1
echo "pack-smoke: passed in $(( $(date +%s) - start )) s"
