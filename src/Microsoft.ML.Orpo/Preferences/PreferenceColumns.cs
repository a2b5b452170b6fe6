using Microsoft.ML.Data;

namespace Microsoft.ML.Orpo.Preferences;

/// <summary>Eager checks that the prompt/chosen/rejected columns exist and hold scalar text.</summary>
internal static class PreferenceColumns
{
    public static IEnumerable<(string Role, string Name)> Roles(OrpoOptions options) => new[]
    {
        ("PromptColumnName", options.PromptColumnName),
        ("ChosenColumnName", options.ChosenColumnName),
        ("RejectedColumnName", options.RejectedColumnName),
    };

    public static void Check(SchemaShape shape, OrpoOptions options, string dataName = "input data")
    {
        foreach (var (role, name) in Roles(options))
        {
            // A later column of the same name hides an earlier one, as in a DataViewSchema.
            var matches = shape.Where(c => c.Name == name).ToList();
            if (matches.Count == 0) throw Missing(name, role, dataName);
            var column = matches[^1];
            if (column.Kind != SchemaShape.Column.VectorKind.Scalar || column.ItemType is not TextDataViewType)
                throw WrongType(name, role, dataName, column.Kind == SchemaShape.Column.VectorKind.Scalar
                    ? column.ItemType.ToString() ?? "unknown" : $"Vector<{column.ItemType}>");
        }
    }

    public static void Check(DataViewSchema schema, OrpoOptions options, string dataName = "input data")
    {
        foreach (var (role, name) in Roles(options))
        {
            var column = schema.GetColumnOrNull(name) ?? throw Missing(name, role, dataName);
            if (column.Type is not TextDataViewType)
                throw WrongType(name, role, dataName, column.Type.ToString() ?? column.Type.GetType().Name);
        }
    }

    private static ArgumentOutOfRangeException Missing(string name, string role, string dataName) =>
        new(role, $"Column '{name}' was not found in the {dataName}: OrpoFineTune expects a text (String) column named '{name}' " +
                  $"(set OrpoOptions.{role} to use another name).");

    private static ArgumentOutOfRangeException WrongType(string name, string role, string dataName, string actual) =>
        new(role, $"Column '{name}' in the {dataName} has type {actual}; OrpoFineTune expects a scalar text (String) column there.");
}
