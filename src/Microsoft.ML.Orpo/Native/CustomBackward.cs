using System.Reflection;
using static TorchSharp.torch;

namespace Microsoft.ML.Orpo.Native;

/// <summary>
/// The backward pass of our custom autograd nodes, releasing memory as libtorch's own nodes do. TorchSharp's custom
/// node keeps its saved tensors until the whole graph is destroyed (it has no <c>release_variables</c>), and the
/// tensors a backward creates or receives belong to the caller's dispose scope, i.e. live to the end of the training
/// step. Left alone, every layer's saved activations and gradients stayed alive through the entire backward pass,
/// so memory peaked at its end. Here the saved tensors and the incoming gradient are
/// released as soon as a node's gradients exist, the handles the backward body makes and does not return die with the
/// node, and the gradients it returned are released when the next custom node on the same thread starts: by then the
/// autograd engine holds its own references to them.
/// (benchmarks/README.md, "Measurements behind the code: CustomBackward")
/// </summary>
internal static class CustomBackward
{
    private const string ReleasedKey = "CustomBackward.released";

    [ThreadStatic] private static List<Tensor>? returned;
    [ThreadStatic] private static List<autograd.AutogradContext>? created;

    // TorchSharp 0.107 keeps, per custom node, an empty_like of every output for the node's lifetime (Node._outputCache,
    // used only to materialise a missing output gradient as zeros). Our outputs always receive their gradient, so those
    // copies are dead weight: with PackedLinear, a q/k/v/o/gate/up-sized allocation per projection, ~340 MB reserved
    // per 41.7M step. Reached by reflection into private fields, so only on the TorchSharp versions that layout was
    // verified on; elsewhere nothing is released (the rest of this class uses public API only).
    private static readonly FieldInfo? NodeField = typeof(autograd.AutogradContext).GetField("_node", BindingFlags.Instance | BindingFlags.NonPublic);
    private static readonly NativeAbiGuard Guard = new(
        "CustomBackward's release of TorchSharp's output copies", "each custom node keeps its copies until the graph is released", CheckFields);

    /// <summary>Null while the output copies are released; otherwise why they are not.</summary>
    public static string? FallbackReason => Guard.FallbackReason;

    /// <summary>
    /// Runs <paramref name="body"/> on the saved tensors and returns its gradients (one per forward argument, null for
    /// non-tensors or inputs that need none). The body may return a saved tensor or <paramref name="gradOutput"/> itself.
    /// </summary>
    public static List<Tensor> Run(autograd.AutogradContext ctx, Tensor gradOutput, Func<List<Tensor>, List<Tensor>> body)
    {
        ReleaseOutputCaches();
        ReleaseReturned();
        if (ctx.get_data(ReleasedKey) is true)
            throw new InvalidOperationException(
                "Trying to backward through a custom ORPO node a second time: its saved tensors were freed after the first backward pass (retain_graph is not supported).");
        var saved = ctx.get_saved_variables();
        List<Tensor>? gradients = null;
        try
        {
            // The body's own scope: what it makes and does not return dies with the node. In the caller's scope (the
            // training step's), a left-over handle such as the view in grad_output.reshape(...).contiguous() kept
            // the incoming gradient or a saved activation alive to the end of the step.
            using (var scope = NewDisposeScope())
            {
                gradients = body(saved);
                scope.MoveToOuter(gradients.Where(g => g is not null));
            }
            (returned ??= new()).AddRange(gradients.Where(g => g is not null));
            return gradients;
        }
        finally
        {
            ctx.save_data(ReleasedKey, true);
            foreach (var t in saved.Append(gradOutput))
                if (gradients is null || !gradients.Any(g => ReferenceEquals(g, t))) t.Dispose();
            ctx.Dispose(); // frees the saved variables now instead of with the graph
        }
    }

    /// <summary>
    /// Call first in every custom forward: the previous node on this thread is complete by then, and its copies of its
    /// outputs are swapped for stand-ins of one element (a zero broadcast to the output's shape, which materialises a
    /// missing gradient exactly as before).
    /// </summary>
    public static void Starting(autograd.AutogradContext ctx)
    {
        ReleaseOutputCaches();
        if (FallbackReason is null) (created ??= new()).Add(ctx);
    }

    /// <summary>TorchSharp's copies of the outputs of <paramref name="ctx"/>'s node (null if it has none).</summary>
    internal static List<Tensor>? OutputCache(autograd.AutogradContext ctx) =>
        NodeField?.GetValue(ctx) is { } node ? OutputCacheField(node.GetType())?.GetValue(node) as List<Tensor> : null;

    private static void ReleaseOutputCaches()
    {
        if (created is not { Count: > 0 }) return;
        if (FallbackReason is null)
            foreach (var ctx in created)
            {
                if (OutputCache(ctx) is not { } cache) continue;
                for (int i = 0; i < cache.Count; i++)
                {
                    if (cache[i] is not { } copy || copy.IsInvalid || copy.numel() <= 1) continue;
                    using (var zero = zeros(1, copy.dtype, copy.device))
                        cache[i] = zero.expand(copy.shape).DetachFromDisposeScope(); // owned by the node, as the copy was
                    copy.Dispose();
                }
            }
        created.Clear();
    }

    private static FieldInfo? OutputCacheField(Type? type)
    {
        for (; type is not null; type = type.BaseType)
            if (type.GetField("_outputCache", BindingFlags.Instance | BindingFlags.NonPublic | BindingFlags.DeclaredOnly) is { } field)
                return field;
        return null;
    }

    // The fields as this class uses them: the context's node, and on the node types TorchSharp derives from its
    // declared type (the generic Node<T> of the custom functions) a list of tensors.
    private static string? CheckFields(bool _)
    {
        if (NodeField is null) return "AutogradContext has no private field _node";
        var caches = typeof(autograd).GetNestedTypes(BindingFlags.Public | BindingFlags.NonPublic)
            .Where(t => t.IsSubclassOf(NodeField.FieldType))
            .Select(t => OutputCacheField(t)).OfType<FieldInfo>().ToList();
        if (caches.Count == 0) return $"no type derived from {NodeField.FieldType.Name} has a private field _outputCache";
        return caches.FirstOrDefault(f => f.FieldType != typeof(List<Tensor>)) is { } other
            ? $"{other.DeclaringType?.Name}._outputCache is a {other.FieldType.Name}, not a List<Tensor>"
            : null;
    }

    private static void ReleaseReturned()
    {
        if (returned is not { Count: > 0 }) return;
        foreach (var t in returned) t.Dispose();
        returned.Clear();
    }
}
